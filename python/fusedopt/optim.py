"""Optimizer classes with torch.optim's names and defaults, over lists of NumPy/CuPy arrays.

Layer: algorithms (calls ``fusedopt.ops`` or ``fusedopt.reference``, never ``_core``)::

    opt = fusedopt.optim.Adam(params, lr=1e-3)
    for batch in data:
        grads = compute_grads(params, batch)    # arrays aligned with params
        opt.step(grads)                          # params updated in place

Differences from torch.optim: ``step`` takes the gradients (NumPy arrays carry no ``.grad``);
there are no parameter groups; ``lr`` may be a float or a schedule, a callable of the number of
steps already taken (0 for the first step, as optax counts) returning the learning rate.

``backend="auto"`` runs the fused kernels of ``fusedopt.ops`` (C++ for NumPy arrays, CUDA for
CuPy arrays); ``backend="reference"`` runs ``fusedopt.reference``, the plain NumPy equations. Both
give the same bits.

Notation: in the update equations of each class, ``t`` is the number of the step being taken
(1 for the first), ``p`` a param, ``g`` its gradient, and every other name is a hyperparameter
(``beta1, beta2 = betas``) or a state array, named as its key in ``opt.state``; the rule
headers (``csrc/include/fusedopt/rules``) and ``fusedopt.ops`` use the same names.

Checkpoints: ``np.savez(f, **flatten_state_dict(opt.state_dict()))`` and
``opt.load_state_dict(unflatten_state_dict(np.load(f)))`` (no pickle); or ``pickle`` the
optimizer itself.
"""
from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union

import numpy as np

from . import _checks, _scalars, ops, reference

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "LBFGS",
           "flatten_state_dict", "unflatten_state_dict"]

#: A learning rate: a float, or a schedule (a callable of the number of steps taken).
LearningRate = Union[float, Callable[[int], float]]
#: The backends: the fused kernels or the NumPy reference.
Backend = Literal["auto", "reference"]

_BACKENDS = {"auto": ops, "reference": reference}

# Documentation that several optimizers share, written once: ``_doc`` fills the placeholders
# ``<name>`` of a class docstring (continuation lines carry the docstring's 4-space indent).
_DOC_PIECES = {
    "params and lr": """\
params : array or list of arrays
        NumPy or CuPy arrays, float32, float64, float16 or bfloat16 (float32 states and math for
        these), C-contiguous, writeable; updated in place by ``step``. One array may be given
        alone.
    lr : float or callable, default {lr}
        The learning rate, >= 0; or a schedule (``fusedopt.schedules``), called with the number
        of steps already taken.""",
    "weight_decay": """\
weight_decay : float, default 0.0
        L2 penalty (added to ``g``), >= 0.""",
    "betas": """\
betas : tuple of 2 floats, default (0.9, 0.999)
        ``(beta1, beta2)``, each in [0, 1).""",
    "eps": """\
eps : float, default {eps}
        Added to the square root, >= 0.""",
    "eps_root": """\
eps_root : float, default 0.0
        Added inside the square root (optax), >= 0. Keyword only.""",
    "amsgrad": """\
amsgrad : bool, default False
        Use the running maximum of ``exp_avg_sq``.""",
    "adam moments": """\
exp_avg        <- beta1 * exp_avg + (1 - beta1) * g
        exp_avg_sq     <- beta2 * exp_avg_sq + (1 - beta2) * g * g
        max_exp_avg_sq <- max(max_exp_avg_sq, exp_avg_sq)   (amsgrad: used for exp_avg_sq below)
        p              <- p - lr * (exp_avg / (1 - beta1^t))
                                 / (sqrt(exp_avg_sq / (1 - beta2^t) + eps_root) + eps)

    State: ``exp_avg``, ``exp_avg_sq``, and ``max_exp_avg_sq`` with amsgrad, zeros at first.""",
    "shared parameters": """\
maximize : bool, default False
        Ascend the objective instead of descending (``g`` is negated first). Keyword only.
    backend : {{"auto", "reference"}}, default "auto"
        ``"auto"``: the fused kernels of ``fusedopt.ops``; ``"reference"``: the NumPy
        equations of ``fusedopt.reference``. The same bits. Keyword only.
    master_weights : bool, default False
        float16/bfloat16 params only: keep a float32 copy of each param in the state
        (``master_param``); the rule updates it and the param receives it rounded to nearest
        even. Without, each 16-bit param is widened, updated and rounded back. Keyword only.

    See ``Optimizer`` for ``step`` (AMP's ``grad_scale``/``found_inf``), ``state_dict``,
    checkpoints, threads and non-finite gradients.""",
}


def _doc(**defaults: str) -> Callable[[type], type]:
    """Fill in a class docstring's shared pieces, with the class's ``lr`` and ``eps``
    defaults."""

    def fill(cls: type) -> type:
        doc = cls.__doc__ or ""
        for name, text in _DOC_PIECES.items():
            if f"<{name}>" in doc:
                doc = doc.replace(f"<{name}>", text.format(**defaults))
        cls.__doc__ = doc
        return cls

    return fill


def _param_list(params: Any) -> list[Any]:
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
    _checks.check_lists([("params", params, True)], array_type=kind, dtypes=_checks.PARAM_DTYPES)
    return params


def _plain(v: Any) -> Any:
    """A value as state_dict() holds it: 0-d arrays and NumPy scalars as Python scalars, 1-d
    arrays and lists (``betas``) as tuples of Python scalars."""
    if isinstance(v, np.ndarray) and v.ndim == 1:
        return tuple(x.item() for x in v)
    if isinstance(v, list):
        return tuple(_plain(x) for x in v)
    if isinstance(v, (np.ndarray, np.generic)) and np.ndim(v) == 0:
        return v.item()
    return v


def _amp_value(name: str, x: Any) -> float:
    """The one float32 of ``grad_scale``/``found_inf``, read on the host."""
    if not (hasattr(x, "dtype") and hasattr(x, "reshape")):
        raise TypeError(f"{name} must be a float32 array of one element, got {type(x).__name__}")
    if x.dtype != np.float32 or x.size != 1:
        raise TypeError(f"{name} must be a float32 array of one element, got dtype {x.dtype} "
                        f"and {x.size} elements")
    return float(x.reshape(-1)[0])


class Optimizer:
    """Base class of the optimizers: holds the params, the learning rate (a float or a
    schedule), the hyperparameters and the state arrays; implements ``step``, ``state_dict``
    and ``load_state_dict``. Subclasses define the update rule.

    Attributes
    ----------
    params : list of arrays
        The arrays updated in place.
    lr : float or callable
        The learning rate or schedule given.
    hyperparams : dict
        The other constructor arguments, by name (``betas``, ``eps``...).
    state : dict of str to list of arrays
        The state arrays, one list per name (``exp_avg``...), aligned with ``params``.
    step_count : int
        The number of steps taken (read only).
    backend : str
        ``"auto"`` or ``"reference"``.

    Notes
    -----
    **Steps.** ``step(grads)`` takes the gradients, a list aligned with ``params``, and updates
    every param and state array in place; it checks everything first and raises
    TypeError/ValueError, changing nothing, on any bad input.

    **AMP.** ``step(grads, grad_scale=s, found_inf=f)``, with ``s`` and ``f`` float32 arrays
    of one element (NumPy or, with CuPy params, on the device): when ``f != 0`` nothing changes
    and the step count does not advance (as ``torch.cuda.amp.GradScaler`` skips
    ``optimizer.step``); otherwise the rule sees ``g / s``. Deciding whether the count
    advances reads ``f`` on the host: one float, one device sync with CuPy arrays. Fill ``f``
    with ``fusedopt.ops.found_inf_(grads, f)``.

    **Non-finite gradients.** A NaN or infinite gradient makes the params and the state NaN or
    infinite, for good: the rules do not check. Use AMP's ``found_inf`` above to skip such a
    step (no second pass over memory), or ``fusedopt.ops.clip_by_global_norm_`` with
    ``error_if_nonfinite=True``.

    **Threads.** Each optimizer holds a lock: ``step``, ``state_dict`` and ``load_state_dict``
    called from several threads at once are serialized, each happens whole, in some order (no
    update is lost). The kernels themselves release the GIL, so different optimizers step in
    parallel.

    **Checkpoints.** ``state_dict()`` is a copy: ``{"step": int, "lr": float or None (a
    schedule), "hyperparams": dict, "state": {name: [arrays]}}``; ``load_state_dict`` restores
    it (a resumed run continues bit for bit, a schedule from the saved step count) and accepts
    0-d arrays where scalars are expected. ``flatten_state_dict`` turns it into a flat dict of
    NumPy arrays for ``np.savez`` and ``unflatten_state_dict`` back. Optimizers also survive
    ``pickle`` and ``copy.deepcopy`` (the copy holds copies of the params).
    """

    def __init__(self, params: Any, lr: LearningRate, backend: Backend = "auto",
                 master_weights: bool = False, **hyperparams: Any) -> None:
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be 'auto' or 'reference', got {backend!r}")
        self.params: list[Any] = _param_list(params)
        self.backend = backend
        self.master_weights = _checks.flag("master_weights", master_weights)
        if master_weights:
            for i, p in enumerate(self.params):
                if not _checks.is_16bit(p.dtype):
                    raise TypeError("master_weights: float32 master weights belong to float16 "
                                    f"or bfloat16 params; params[{i}] has dtype {p.dtype}")
        if not callable(lr):
            lr = _checks.nonneg("lr", lr)
        self.lr: LearningRate = lr
        self.hyperparams: dict[str, Any] = {k: _plain(v) for k, v in hyperparams.items()}
        self._step = 0
        self._lock = threading.Lock()
        # Checks every hyperparameter now rather than at the first step.
        self._scalars(1, 0.0 if callable(lr) else lr, self.hyperparams)
        self.state: dict[str, list[Any]] = {
            name: [self._new_state(p, name) for p in self.params]
            for name in self._all_state_names(self.hyperparams)}

    # -- to be provided by subclasses ---------------------------------------------------------
    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        raise NotImplementedError

    def _scalars(self, step: int, lr: float, hp: Mapping[str, Any]) -> Any:
        """Checks the hyperparameters (raises) for the given step and lr."""
        raise NotImplementedError

    def _update(self, grads: list[Any], step: int, lr: float, **amp: Any) -> None:
        raise NotImplementedError

    def _initial_value(self, name: str) -> float:
        return 0.0

    # -----------------------------------------------------------------------------------------
    @property
    def _impl(self) -> Any:
        """The backend module (looked up, not stored: an optimizer pickles without modules)."""
        return _BACKENDS[self.backend]

    def _all_state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        """The rule's states, and ``master_param`` with master weights."""
        return self._state_names(hp) + (("master_param",) if self.master_weights else ())

    def _new_state(self, p: Any, name: str) -> Any:
        """A state array: float32 for float16/bfloat16 params (the master weights a copy of the
        param), else the param's dtype."""
        dtype = np.float32 if _checks.is_16bit(p.dtype) else p.dtype
        if name == "master_param":
            return p.astype(np.float32)
        v = self._initial_value(name)
        return np.zeros_like(p, dtype=dtype) if v == 0.0 else np.full_like(p, v, dtype=dtype)

    @property
    def step_count(self) -> int:
        """Number of steps taken so far."""
        return self._step

    def current_lr(self) -> float:
        """The learning rate the next step will use (a schedule's value at ``step_count``)."""
        if callable(self.lr):
            return _checks.nonneg("lr (the schedule's value)", self.lr(self._step))
        return self.lr

    def _grad_list(self, grads: Any) -> list[Any]:
        if isinstance(grads, (list, tuple)):
            return list(grads)
        if hasattr(grads, "dtype") and len(self.params) == 1:
            return [grads]
        raise TypeError(f"grads must be a list of arrays, got {type(grads).__name__}")

    def step(self, grads: Sequence[Any] | Any, *, grad_scale: Any = None,
             found_inf: Any = None) -> None:
        """One update of every param.

        Parameters
        ----------
        grads : list of arrays, or one array when there is one param
            Aligned with ``params``: same shapes and dtypes. Read only.
        grad_scale, found_inf : float32 arrays of one element, optional (both or neither)
            AMP's loss scaling: when ``found_inf != 0`` nothing changes and ``step_count`` does
            not advance; otherwise the rule sees ``g / grad_scale``. ``found_inf`` is read on
            the host (a device sync with CuPy arrays).

        Raises TypeError/ValueError naming the argument, changing nothing, on any bad input.
        Steps from several threads are serialized (see the class notes).
        """
        grads = self._grad_list(grads)
        amp: dict[str, Any] = {}
        skip = False
        if grad_scale is not None or found_inf is not None:
            if grad_scale is None or found_inf is None:
                raise ValueError("grad_scale and found_inf go together: give both or neither")
            _amp_value("grad_scale", grad_scale)
            skip = _amp_value("found_inf", found_inf) != 0.0
            # Both backends take the pair: the step is skipped, or g / grad_scale, in one pass.
            amp = {"grad_scale": grad_scale, "found_inf": found_inf}
        with self._lock:
            if self.master_weights:
                amp["master_params"] = self.state["master_param"]
            lr = self.current_lr()
            self._update(grads, self._step + 1, lr, **amp)
            if not skip:
                self._step += 1

    def state_dict(self) -> dict[str, Any]:
        """A copy of the optimizer's state: ``{"step": int, "lr": float, or None when lr is a
        schedule, "hyperparams": dict, "state": {name: list of arrays}}``. See
        ``flatten_state_dict`` to save it with ``np.savez``."""
        with self._lock:
            return {
                "step": self._step,
                "lr": None if callable(self.lr) else self.lr,
                "hyperparams": dict(self.hyperparams),
                "state": {k: [a.copy() for a in v] for k, v in self.state.items()},
            }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()``: a resumed run continues bit for bit, and a schedule
        continues from the saved step count. 0-d arrays are accepted where scalars are
        expected (as ``unflatten_state_dict(np.load(f))`` gives them).

        Everything is checked and converted (into new arrays) before anything is changed: on
        TypeError/ValueError the optimizer is as it was. A float ``lr`` replaces a float lr; a
        schedule stays (``lr`` None in ``state_dict``: the saved one was a schedule).
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        missing = {"step", "lr", "hyperparams", "state"} - set(state_dict.keys())
        if missing:
            raise ValueError(f"state_dict lacks {sorted(missing)}")
        step = _checks.integer("state_dict['step']", state_dict["step"], minimum=0)
        if step >= _checks.STEP_MAX:
            raise ValueError(f"state_dict['step'] must be < 2**63 - 1, got {step}")
        lr = _plain(state_dict["lr"])
        if lr is not None:
            lr = _checks.nonneg("state_dict['lr']", lr)
        hp = state_dict["hyperparams"]
        if not isinstance(hp, Mapping) or set(hp) != set(self.hyperparams):
            raise ValueError(
                f"state_dict['hyperparams'] must have the keys {sorted(self.hyperparams)}")
        hp = {k: _plain(hp[k]) for k in self.hyperparams}
        self._scalars(1, 0.0 if lr is None else lr, hp)
        names = self._all_state_names(hp)
        st = state_dict["state"]
        if not isinstance(st, Mapping) or set(st) != set(names):
            raise ValueError(f"state_dict['state'] must have the arrays {sorted(names)}")
        state = {name: self._converted(name, st[name]) for name in names}
        # Checked and converted: now apply, in steps that cannot fail.
        with self._lock:
            self.hyperparams = hp
            if lr is not None and not callable(self.lr):
                self.lr = lr
            self.state = state
            self._step = step

    def _converted(self, name: str, arrs: Any) -> list[Any]:
        """New arrays like the params holding ``arrs`` (checked: shape, dtype, conversion)."""
        where = f"state_dict['state']['{name}']"
        if not isinstance(arrs, (list, tuple)) or len(arrs) != len(self.params):
            raise ValueError(f"{where} must be a list of {len(self.params)} arrays")
        out = []
        for i, (a, p) in enumerate(zip(arrs, self.params)):
            dtype = np.dtype(np.float32) if _checks.is_16bit(p.dtype) else p.dtype
            if getattr(a, "shape", None) != p.shape or getattr(a, "dtype", None) != dtype:
                raise ValueError(f"{where}[{i}] must have shape {p.shape} and dtype {dtype}")
            try:
                if isinstance(p, np.ndarray):
                    b = np.empty_like(p, dtype=dtype)
                    b[...] = a
                else:
                    b = importlib.import_module("cupy").array(a, dtype=dtype, copy=True)
            except Exception as e:  # anything the array-like raises: the argument is bad
                raise TypeError(f"{where}[{i}] could not be converted to an array: "
                                f"{type(e).__name__}: {e}") from e
            out.append(b)
        return out

    # -- pickle and copy: everything but the lock ----------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            d = dict(self.__dict__)
        del d["_lock"]
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams.items())
        return (f"{type(self).__name__}({len(self.params)} params, lr={self.lr!r}, {hp}, "
                f"backend={self.backend!r})")


def flatten_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A ``state_dict()`` as a flat dict of NumPy arrays, for ``np.savez(f, **flat)``.

    Keys: ``"step"`` (0-d int64), ``"lr"`` (0-d float64; absent when lr is a schedule),
    ``"hyperparams.<name>"`` (0-d arrays; ``betas`` a 1-d array of 2), and
    ``"state.<name>.<i>"`` for the i-th array of each state list (CuPy arrays are copied to the
    host). ``unflatten_state_dict`` inverts it; nothing needs ``allow_pickle``.

    Parameters
    ----------
    state_dict : dict
        What ``Optimizer.state_dict()`` returns.

    Returns
    -------
    dict of str to numpy.ndarray

    Examples
    --------
    >>> np.savez("ckpt.npz", **flatten_state_dict(opt.state_dict()))    # doctest: +SKIP
    >>> opt.load_state_dict(unflatten_state_dict(np.load("ckpt.npz")))  # doctest: +SKIP
    """
    flat = {"step": np.asarray(state_dict["step"], dtype=np.int64)}
    if state_dict["lr"] is not None:
        flat["lr"] = np.asarray(state_dict["lr"], dtype=np.float64)
    for k, v in state_dict["hyperparams"].items():
        flat[f"hyperparams.{k}"] = np.asarray(v)
    for k, arrs in state_dict["state"].items():
        for i, a in enumerate(arrs):
            flat[f"state.{k}.{i}"] = a if isinstance(a, np.ndarray) else a.get()
    return flat


def unflatten_state_dict(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The nested ``state_dict`` of a flat one (``flatten_state_dict``, or the ``np.load`` of
    its ``np.savez``): scalars as Python scalars, ``betas`` as a tuple, arrays as they are.

    Parameters
    ----------
    flat : mapping of str to arrays
        A dict, or the ``NpzFile`` that ``np.load`` returns (read it before closing it).

    Returns
    -------
    dict
        For ``Optimizer.load_state_dict``.

    Raises ValueError on a key it does not know, a missing ``step`` or a state list with a gap.

    Examples
    --------
    >>> opt = Adam([np.zeros(2)], lr=0.1)
    >>> opt.step([np.ones(2)])
    >>> flat = flatten_state_dict(opt.state_dict())
    >>> sorted(flat)[:4]
    ['hyperparams.amsgrad', 'hyperparams.betas', 'hyperparams.eps', 'hyperparams.eps_root']
    >>> unflatten_state_dict(flat)["step"]
    1
    """
    if not hasattr(flat, "keys"):
        raise TypeError(f"flat must be a dict of arrays, got {type(flat).__name__}")
    out: dict[str, Any] = {"lr": None, "hyperparams": {}}
    lists: dict[str, dict[int, Any]] = {}
    for key in flat.keys():
        v = flat[key]
        head, _, rest = key.partition(".")
        if key in ("step", "lr"):
            out[key] = _plain(v)
        elif head == "hyperparams" and rest:
            out["hyperparams"][rest] = _plain(v)
        elif head == "state" and rest.rpartition(".")[2].isdigit():
            name, _, i = rest.rpartition(".")
            lists.setdefault(name, {})[int(i)] = v
        else:
            raise ValueError(f"flat has an unknown key {key!r}")
    if "step" not in out:
        raise ValueError("flat lacks 'step'")
    out["state"] = {}
    for name, by_index in lists.items():
        if sorted(by_index) != list(range(len(by_index))):
            raise ValueError(f"flat's state.{name}.<i> are not numbered 0..n-1")
        out["state"][name] = [by_index[i] for i in range(len(by_index))]
    return out


@_doc(lr="1e-3")
class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening and Nesterov momentum
    (``torch.optim.SGD``).

    At step ``t``, for every element::

        g               <- (-g if maximize else g) + weight_decay * p
        momentum_buffer <- g                                           (t = 1)
        momentum_buffer <- momentum * momentum_buffer + (1 - dampening) * g    (t > 1)
        g               <- g + momentum * momentum_buffer    (nesterov)  or  momentum_buffer
        p               <- p - lr * g

    The momentum lines apply when ``momentum != 0``; only then is there a state array,
    ``momentum_buffer``. ``SGD(params, lr, momentum=0.9, dampening=0.9)`` is the exponential
    moving average form ``v = 0.9 v + 0.1 g`` (after a first step that sets ``v = g``).

    Parameters
    ----------
    <params and lr>
    momentum : float, default 0.0
        >= 0.
    dampening : float, default 0.0
        In [0, 1].
    <weight_decay>
    nesterov : bool, default False
        Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
    <shared parameters>

    Examples
    --------
    >>> w = np.zeros(3)
    >>> SGD([w], lr=0.1, momentum=0.9).step([w - 1.0])
    >>> w
    array([0.1, 0.1, 0.1])
    """

    def __init__(self, params: Any, lr: LearningRate = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, *,
                 maximize: bool = False, backend: Backend = "auto",
                 master_weights: bool = False) -> None:
        super().__init__(params, lr, backend, master_weights, momentum=momentum,
                         dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)

    def _state_names(self, hp):
        return ("momentum_buffer",) if hp["momentum"] != 0 else ()

    def _scalars(self, step, lr, hp):
        return _scalars.sgd(step=step, lr=lr, **hp)

    def _update(self, grads, step, lr, **amp):
        self._impl.sgd_(self.params, grads, self.state.get("momentum_buffer"), step=step, lr=lr,
                        **self.hyperparams, **amp)


@_doc(lr="1e-2", eps="1e-10")
class Adagrad(Optimizer):
    """Adagrad (``torch.optim.Adagrad``; Duchi, Hazan & Singer 2011), with optax's
    ``eps_root`` inside the square root.

    At step ``t``, for every element::

        g   <- (-g if maximize else g) + weight_decay * p
        sum <- sum + g * g
        p   <- p - lr / (1 + (t - 1) * lr_decay) * g / (sqrt(sum + eps_root) + eps)

    State: ``sum``, starting at ``initial_accumulator_value``.

    Parameters
    ----------
    <params and lr>
    lr_decay : float, default 0.0
        >= 0.
    <weight_decay>
    initial_accumulator_value : float, default 0.0
        The first value of ``sum``, >= 0.
    <eps>
    <eps_root>
    <shared parameters>

    Examples
    --------
    >>> opt = Adagrad([np.zeros(2)], lr=0.5, initial_accumulator_value=3.0)
    >>> opt.step([np.ones(2)])           # sum = 3 + 1: a step of 0.5 / 2
    >>> opt.params[0], opt.state["sum"][0]
    (array([-0.25, -0.25]), array([4., 4.]))
    """

    def __init__(self, params: Any, lr: LearningRate = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, *, eps_root: float = 0.0, maximize: bool = False,
                 backend: Backend = "auto", master_weights: bool = False) -> None:
        self._init_acc = _checks.nonneg("initial_accumulator_value", initial_accumulator_value)
        super().__init__(params, lr, backend, master_weights, lr_decay=lr_decay, weight_decay=weight_decay,
                         eps=eps, eps_root=eps_root, maximize=maximize)

    def _initial_value(self, name):
        return self._init_acc

    def _state_names(self, hp):
        return ("sum",)

    def _scalars(self, step, lr, hp):
        return _scalars.adagrad(step=step, lr=lr, **hp)

    def _update(self, grads, step, lr, **amp):
        self._impl.adagrad_(self.params, grads, self.state["sum"], step=step, lr=lr,
                            **self.hyperparams, **amp)


@_doc(lr="1e-2", eps="1e-8")
class RMSprop(Optimizer):
    """RMSprop (``torch.optim.RMSprop``; Hinton, lecture 6e): the centered variant (Graves
    2013), momentum, optax's ``eps_root``.

    At step ``t``, for every element::

        g               <- (-g if maximize else g) + weight_decay * p
        square_avg      <- alpha * square_avg + (1 - alpha) * g * g
        grad_avg        <- alpha * grad_avg + (1 - alpha) * g                  (centered)
        denom            = sqrt(square_avg - grad_avg * grad_avg + eps_root) + eps   (centered)
        denom            = sqrt(square_avg + eps_root) + eps                   (otherwise)
        momentum_buffer <- momentum * momentum_buffer + g / denom              (momentum > 0)
        p               <- p - lr * momentum_buffer     (momentum > 0)   or   p - lr * g / denom

    State: ``square_avg``; ``grad_avg`` when centered; ``momentum_buffer`` when
    ``momentum != 0``.

    Parameters
    ----------
    <params and lr>
    alpha : float, default 0.99
        Smoothing constant, in [0, 1].
    <eps>
    <weight_decay>
    momentum : float, default 0.0
        >= 0.
    centered : bool, default False
        Divide by an estimate of the variance instead of the second moment.
    <eps_root>
    <shared parameters>

    Examples
    --------
    >>> opt = RMSprop([np.zeros(2)], lr=0.01, alpha=0.75, centered=True)
    >>> sorted(opt.state)
    ['grad_avg', 'square_avg']
    """

    def __init__(self, params: Any, lr: LearningRate = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, *, eps_root: float = 0.0, maximize: bool = False,
                 backend: Backend = "auto",
                 master_weights: bool = False) -> None:
        super().__init__(params, lr, backend, master_weights, alpha=alpha, eps=eps,
                         eps_root=eps_root,
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

    def _update(self, grads, step, lr, **amp):
        st = self.state
        self._impl.rmsprop_(self.params, grads, st["square_avg"], st.get("grad_avg"),
                            st.get("momentum_buffer"), step=step, lr=lr, **self.hyperparams,
                            **amp)


@_doc(lr="1e-3", eps="1e-8")
class Adam(Optimizer):
    """Adam (``torch.optim.Adam``; Kingma & Ba 2015): bias correction, L2 ``weight_decay``,
    AMSGrad (Reddi et al. 2018) and optax's ``eps_root``.

    At step ``t``, for every element, with ``beta1, beta2 = betas``::

        g              <- (-g if maximize else g) + weight_decay * p
        <adam moments>

    Parameters
    ----------
    <params and lr>
    <betas>
    <eps>
    <weight_decay> See ``AdamW`` for the decoupled form.
    <amsgrad>
    <eps_root>
    <shared parameters>

    Examples
    --------
    >>> w = np.zeros(3, np.float32)
    >>> opt = Adam([w], lr=0.1)
    >>> opt.step([w - 1.0])          # the first step moves each element by about lr
    >>> w, opt.step_count
    (array([0.1, 0.1, 0.1], dtype=float32), 1)
    """

    _decoupled = False

    def __init__(self, params: Any, lr: LearningRate = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, eps_root: float = 0.0,
                 maximize: bool = False, backend: Backend = "auto",
                 master_weights: bool = False) -> None:
        super().__init__(params, lr, backend, master_weights, betas=betas, eps=eps,
                         eps_root=eps_root,
                         weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)

    def _state_names(self, hp):
        names = ("exp_avg", "exp_avg_sq")
        return names + ("max_exp_avg_sq",) if hp["amsgrad"] else names

    def _scalars(self, step, lr, hp):
        return _scalars.adam(step=step, lr=lr, decoupled_weight_decay=self._decoupled, **hp)

    def _update(self, grads, step, lr, **amp):
        st = self.state
        self._impl.adam_(self.params, grads, st["exp_avg"], st["exp_avg_sq"],
                         st.get("max_exp_avg_sq"), step=step, lr=lr,
                         decoupled_weight_decay=self._decoupled, **self.hyperparams, **amp)


@_doc(lr="1e-3", eps="1e-8")
class AdamW(Adam):
    """AdamW (``torch.optim.AdamW``; Loshchilov & Hutter 2019): Adam with decoupled weight
    decay, default ``weight_decay=1e-2``.

    At step ``t``, for every element, with ``beta1, beta2 = betas``::

        g              <- -g if maximize else g
        p              <- p * (1 - lr * weight_decay)
        <adam moments>

    Parameters
    ----------
    <params and lr>
    <betas>
    <eps>
    weight_decay : float, default 1e-2
        Decoupled decay (the params shrink by ``lr * weight_decay`` each step), >= 0.
    <amsgrad>
    <eps_root>
    <shared parameters>

    Examples
    --------
    >>> w = np.ones(3)
    >>> AdamW([w], lr=0.1, weight_decay=0.5).step([np.zeros(3)])  # only the decay, 1 - 0.05
    >>> w
    array([0.95, 0.95, 0.95])
    """

    _decoupled = True

    def __init__(self, params: Any, lr: LearningRate = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, eps_root: float = 0.0,
                 maximize: bool = False, backend: Backend = "auto",
                 master_weights: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, eps_root=eps_root,
                         maximize=maximize, backend=backend, master_weights=master_weights)


@_doc(lr="2e-3")
class Adamax(Optimizer):
    """AdaMax (``torch.optim.Adamax``; Kingma & Ba 2015, section 7.1), Adam's infinity-norm
    variant.

    At step ``t``, for every element, with ``beta1, beta2 = betas``::

        g        <- (-g if maximize else g) + weight_decay * p
        exp_avg  <- beta1 * exp_avg + (1 - beta1) * g
        exp_inf  <- max(beta2 * exp_inf, |g| + eps)
        p        <- p - lr / (1 - beta1^t) * exp_avg / exp_inf

    State: ``exp_avg``, ``exp_inf``, zeros at first.

    Parameters
    ----------
    <params and lr>
    <betas>
    eps : float, default 1e-8
        Keeps ``exp_inf > 0``, >= 0.
    <weight_decay>
    <shared parameters>

    Examples
    --------
    >>> opt = Adamax([np.zeros(2, np.float32)], lr=0.1, betas=(0.5, 0.9))
    >>> opt.step([np.full(2, -4.0, np.float32)])
    >>> opt.state["exp_inf"][0]
    array([4., 4.], dtype=float32)
    """

    def __init__(self, params: Any, lr: LearningRate = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, maximize: bool = False,
                 backend: Backend = "auto",
                 master_weights: bool = False) -> None:
        super().__init__(params, lr, backend, master_weights, betas=betas, eps=eps,
                         weight_decay=weight_decay,
                         maximize=maximize)

    def _state_names(self, hp):
        return ("exp_avg", "exp_inf")

    def _scalars(self, step, lr, hp):
        return _scalars.adamax(step=step, lr=lr, **hp)

    def _update(self, grads, step, lr, **amp):
        st = self.state
        self._impl.adamax_(self.params, grads, st["exp_avg"], st["exp_inf"], step=step, lr=lr,
                           **self.hyperparams, **amp)


from .lbfgs import LBFGS  # noqa: E402 -- re-exported here; defined with the L-BFGS solver
